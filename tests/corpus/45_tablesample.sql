-- A sampled table.
-- expect: rejected RangeTableSample
SELECT u.pk_user FROM tb_user u TABLESAMPLE BERNOULLI (50)

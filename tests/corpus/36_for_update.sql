-- A locking read copied from application code.
-- expect: rejected locking clause
SELECT o.pk_order, o.status FROM tb_order o FOR UPDATE

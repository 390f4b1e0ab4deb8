-- A random sort key (volatile).
-- expect: rejected volatile function
SELECT p.pk_post, random() AS shuffle FROM tb_post p

-- A generated identifier in the read model.
-- expect: rejected volatile function
SELECT u.pk_user, gen_random_uuid() AS token FROM tb_user u

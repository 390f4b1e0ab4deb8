-- A second statement smuggled after the SELECT.
-- expect: rejected multiple statements
SELECT u.pk_user FROM tb_user u; DROP TABLE tb_user

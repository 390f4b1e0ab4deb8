-- SQLAlchemy style: anonymous aliases and a correlated scalar subquery labelled anon_1.
-- expect: ok
SELECT tb_user_1.pk_user AS pk_user, tb_user_1.email AS tb_user_1_email,
       (SELECT count(tb_post_1.pk_post) AS count_1 FROM tb_post AS tb_post_1
         WHERE tb_post_1.fk_author = tb_user_1.pk_user) AS anon_1
  FROM tb_user AS tb_user_1

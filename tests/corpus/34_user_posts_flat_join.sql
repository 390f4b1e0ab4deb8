-- A flat join that repeats each user per post (the key would not be unique).
-- expect: rejected row-multiplying join
SELECT u.pk_user, p.title
  FROM tb_user u
  JOIN tb_post p ON p.fk_author = u.pk_user

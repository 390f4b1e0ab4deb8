-- DISTINCT over a join that would repeat the root: one row per author who commented.
-- expect: ok
SELECT DISTINCT u.pk_user, u.name
  FROM tb_user u
  JOIN tb_comment c ON c.fk_author = u.pk_user

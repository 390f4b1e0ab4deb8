-- Counting users per organization keyed by a non-unique column.
-- expect: rejected key
SELECT u.fk_organization AS pk_organization, count(*) AS users
  FROM tb_user u
 GROUP BY u.fk_organization

-- A user with the title of the latest post (ORDER BY ... LIMIT 1 inside a correlated subquery).
-- expect: ok
SELECT u.pk_user,
       u.name,
       (SELECT p.title FROM tb_post p WHERE p.fk_author = u.pk_user
         ORDER BY p.published_at DESC NULLS LAST, p.pk_post DESC LIMIT 1) AS latest_title
  FROM tb_user u

-- A non-recursive CTE aggregating children, joined back on the key.
-- expect: ok
WITH post_stats AS (
    SELECT p.fk_author, count(*) AS posts, sum(p.view_count) AS views
      FROM tb_post p
     GROUP BY p.fk_author
)
SELECT u.pk_user, u.name, COALESCE(s.posts, 0) AS posts, COALESCE(s.views, 0) AS views
  FROM tb_user u
  LEFT JOIN post_stats s ON s.fk_author = u.pk_user

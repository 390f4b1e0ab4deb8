-- The three most viewed posts of each author through LEFT JOIN LATERAL.
-- expect: ok
SELECT u.pk_user, top.titles
  FROM tb_user u
  LEFT JOIN LATERAL (
      SELECT jsonb_agg(x.title ORDER BY x.view_count DESC, x.pk_post) AS titles
        FROM (SELECT p.title, p.view_count, p.pk_post FROM tb_post p WHERE p.fk_author = u.pk_user
               ORDER BY p.view_count DESC, p.pk_post LIMIT 3) x
  ) top ON true

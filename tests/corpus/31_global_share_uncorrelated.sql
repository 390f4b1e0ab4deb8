-- Share of all views (an uncorrelated aggregate over the whole table).
-- expect: rejected uncorrelated aggregate subquery
SELECT p.pk_post, p.view_count::numeric / NULLIF((SELECT sum(x.view_count) FROM tb_post x), 0) AS share
  FROM tb_post p

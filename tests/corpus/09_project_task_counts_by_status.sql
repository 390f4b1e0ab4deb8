-- A project board: task counts per status through a grouped derived table inside a subquery.
-- expect: ok
SELECT p.pk_project,
       p.name,
       (SELECT COALESCE(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
          FROM (SELECT t.status, count(*) AS n FROM tb_task t WHERE t.fk_project = p.pk_project GROUP BY t.status) s
       ) AS by_status
  FROM tb_project p

-- Organization -> projects -> tasks: two levels of nested arrays.
-- expect: ok
SELECT o.pk_organization,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                          'name', p.name,
                          'open_tasks', COALESCE((SELECT jsonb_agg(t.title ORDER BY t.pk_task) FROM tb_task t
                                                   WHERE t.fk_project = p.pk_project AND t.status <> 'done'),
                                                 '[]'::jsonb))
                        ORDER BY p.pk_project)
                   FROM tb_project p WHERE p.fk_organization = o.pk_organization), '[]'::jsonb) AS projects
  FROM tb_organization o

-- Formatting with string and date functions, CASE and COALESCE.
-- expect: ok
SELECT t.pk_task,
       upper(left(t.title, 3)) || '-' || t.pk_task AS code,
       CASE t.priority WHEN 1 THEN 'high' WHEN 2 THEN 'normal' ELSE 'low' END AS priority,
       to_char(t.due_date, 'YYYY-MM-DD') AS due,
       extract(isodow FROM t.due_date) AS due_weekday,
       COALESCE(a.name, 'nobody') AS assignee
  FROM tb_task t
  LEFT JOIN tb_user a ON a.pk_user = t.fk_assignee

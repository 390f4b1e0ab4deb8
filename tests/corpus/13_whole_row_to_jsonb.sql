-- Hasura / PostgREST style: the whole row as JSON.
-- expect: ok
SELECT t.pk_task, to_jsonb(t) - 'pk_task' AS data
  FROM tb_task t

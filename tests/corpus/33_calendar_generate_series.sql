-- A calendar row per task and day (a set-returning function in FROM).
-- expect: rejected function in FROM
SELECT t.pk_task, d.day
  FROM tb_task t, generate_series(t.due_date - 2, t.due_date, interval '1 day') d(day)

-- A read model filtered by a stable session function (accepted: see docs/limits.md).
-- expect: ok
SELECT u.pk_user, u.name, u.email = current_user AS is_me
  FROM tb_user u

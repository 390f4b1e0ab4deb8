-- A document built with json (not jsonb) functions.
-- expect: rejected type without equality
SELECT u.pk_user, json_build_object('name', u.name, 'email', u.email) AS data FROM tb_user u

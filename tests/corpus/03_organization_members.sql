-- An organization with its members and member count.
-- expect: ok
SELECT o.pk_organization,
       o.name,
       (SELECT count(*) FROM tb_user u WHERE u.fk_organization = o.pk_organization AND u.is_active) AS active_members,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('id', u.id, 'email', u.email) ORDER BY u.email)
                   FROM tb_user u WHERE u.fk_organization = o.pk_organization AND u.deleted_at IS NULL),
                '[]'::jsonb) AS members
  FROM tb_organization o

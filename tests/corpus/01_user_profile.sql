-- A user profile with its organization as a nested object (GraphQL-style read model).
-- expect: ok
SELECT u.pk_user, u.id,
       jsonb_build_object(
           'id', u.id, 'email', u.email, 'name', u.name, 'active', u.is_active, 'roles', to_jsonb(u.roles),
           'organization', CASE WHEN o.pk_organization IS NULL THEN NULL
                                ELSE jsonb_build_object('id', o.id, 'name', o.name, 'plan', o.plan) END
       ) AS data
  FROM tb_user u
  LEFT JOIN tb_organization o ON o.pk_organization = u.fk_organization

-- A category with its direct children (self-referencing table).
-- expect: ok
SELECT c.pk_category,
       c.name,
       parent.name AS parent,
       COALESCE((SELECT jsonb_agg(ch.name ORDER BY ch.name) FROM tb_category ch WHERE ch.fk_parent = c.pk_category),
                '[]'::jsonb) AS children
  FROM tb_category c
  LEFT JOIN tb_category parent ON parent.pk_category = c.fk_parent

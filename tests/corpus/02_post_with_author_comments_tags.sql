-- The classic CQRS post document: author, comments with their authors, tags.
-- expect: ok
SELECT p.pk_post, p.id, p.fk_author,
       jsonb_build_object(
           'id', p.id, 'title', p.title, 'status', p.status,
           'author', jsonb_build_object('id', a.id, 'name', a.name),
           'comments', COALESCE((SELECT jsonb_agg(jsonb_build_object('body', c.body, 'by', ca.name)
                                                  ORDER BY c.pk_comment)
                                   FROM tb_comment c LEFT JOIN tb_user ca ON ca.pk_user = c.fk_author
                                  WHERE c.fk_post = p.pk_post), '[]'::jsonb),
           'tags', COALESCE((SELECT jsonb_agg(t.slug ORDER BY t.slug)
                               FROM tb_post_tag pt JOIN tb_tag t ON t.pk_tag = pt.fk_tag
                              WHERE pt.fk_post = p.pk_post), '[]'::jsonb)
       ) AS data
  FROM tb_post p
  JOIN tb_user a ON a.pk_user = p.fk_author

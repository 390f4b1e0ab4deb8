-- A polymorphic activity feed built with UNION ALL.
-- expect: rejected set operation
SELECT p.pk_post AS pk_item, 'post' AS kind, p.title AS text FROM tb_post p
UNION ALL
SELECT c.pk_comment, 'comment', c.body FROM tb_comment c

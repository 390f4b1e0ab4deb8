-- Tag lists as a string and as an array.
-- expect: ok
SELECT p.pk_post,
       (SELECT string_agg(t.slug, ', ' ORDER BY t.slug) FROM tb_post_tag pt JOIN tb_tag t ON t.pk_tag = pt.fk_tag
         WHERE pt.fk_post = p.pk_post) AS tag_list,
       ARRAY(SELECT pt.fk_tag FROM tb_post_tag pt WHERE pt.fk_post = p.pk_post ORDER BY pt.fk_tag) AS tag_ids
  FROM tb_post p

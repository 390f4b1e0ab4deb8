-- Tags of a post counted through a join table with a composite primary key.
-- expect: ok
SELECT t.pk_tag, t.slug,
       (SELECT count(*) FROM tb_post_tag pt JOIN tb_post p ON p.pk_post = pt.fk_post
         WHERE pt.fk_tag = t.pk_tag AND p.status = 'published') AS published_posts
  FROM tb_tag t

-- The ten most viewed posts.
-- expect: rejected LIMIT/OFFSET
SELECT p.pk_post, p.title FROM tb_post p ORDER BY p.view_count DESC LIMIT 10

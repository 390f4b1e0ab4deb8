-- IN (subquery) over a NOT NULL column.
-- expect: ok
SELECT t.pk_tag, t.slug,
       t.pk_tag IN (SELECT pt.fk_tag FROM tb_post_tag pt) AS used
  FROM tb_tag t

-- A helper view is expanded: its tables become sources.
-- expect: ok
SELECT v.pk_post, v.title, u.name AS author
  FROM v_published_post v
  JOIN tb_user u ON u.pk_user = v.fk_author

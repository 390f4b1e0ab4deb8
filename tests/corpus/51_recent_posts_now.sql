-- "Posts of the last 7 days": the result changes with the clock, not with writes.
-- expect: rejected time-dependent function
SELECT p.pk_post, p.title, p.published_at > now() - interval '7 days' AS is_recent
  FROM tb_post p

-- A comment with its parent and its replies (self-reference through fk_parent).
-- expect: ok
SELECT c.pk_comment,
       c.body,
       parent.body AS in_reply_to,
       (SELECT count(*) FROM tb_comment r WHERE r.fk_parent = c.pk_comment) AS replies
  FROM tb_comment c
  LEFT JOIN tb_comment parent ON parent.pk_comment = c.fk_parent

-- Posts right-joined to users: users without posts would give rows with a NULL key.
-- expect: rejected key
SELECT p.pk_post, u.name
  FROM tb_post p
 RIGHT JOIN tb_user u ON u.pk_user = p.fk_author

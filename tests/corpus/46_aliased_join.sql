-- A parenthesized join with an alias.
-- expect: rejected aliased join
SELECT j.pk_post, j.name FROM (tb_post p JOIN tb_user u ON u.pk_user = p.fk_author) AS j

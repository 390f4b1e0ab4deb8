-- Django ORM style: every identifier quoted and qualified with the table name.
-- expect: ok
SELECT "tb_post"."pk_post", "tb_post"."title", "tb_post"."status", "tb_user"."email" AS "author_email"
  FROM "tb_post"
 INNER JOIN "tb_user" ON ("tb_post"."fk_author" = "tb_user"."pk_user")

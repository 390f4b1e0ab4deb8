-- A leaderboard rank over all products (a window over every row).
-- expect: rejected window function
SELECT pr.pk_product, rank() OVER (ORDER BY pr.price DESC) AS price_rank
  FROM tb_product pr

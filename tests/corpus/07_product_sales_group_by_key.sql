-- Sales per product with GROUP BY the root key over a LEFT JOIN (reporting-style).
-- expect: ok
SELECT pr.pk_product,
       pr.name,
       count(i.pk_order_item) AS lines,
       COALESCE(sum(i.quantity), 0) AS units,
       COALESCE(sum(i.quantity * i.unit_price), 0) AS revenue
  FROM tb_product pr
  LEFT JOIN tb_order_item i ON i.fk_product = pr.pk_product
 GROUP BY pr.pk_product

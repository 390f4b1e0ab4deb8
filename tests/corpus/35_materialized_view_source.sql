-- Reading a materialized view (no triggers can maintain it).
-- expect: rejected materialized view
SELECT pr.pk_product, s.sold
  FROM tb_product pr
  LEFT JOIN mv_product_sales s ON s.fk_product = pr.pk_product

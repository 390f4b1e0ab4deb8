-- Reading and reshaping jsonb columns.
-- expect: ok
SELECT pr.pk_product,
       pr.attributes -> 'color' AS color,
       (pr.attributes ->> 'weight')::int AS weight,
       pr.attributes ? 'sale' AS on_sale,
       jsonb_strip_nulls(jsonb_build_object('sku', pr.sku, 'sale', pr.attributes -> 'sale')) AS summary
  FROM tb_product pr

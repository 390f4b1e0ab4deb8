-- A product page: category path of two levels, stock, review statistics.
-- expect: ok
SELECT pr.pk_product,
       pr.sku,
       jsonb_build_object(
           'name', pr.name,
           'price', pr.price,
           'color', pr.attributes ->> 'color',
           'category', cat.name,
           'parent_category', parent.name,
           'in_stock', COALESCE(inv.quantity, 0) > 0,
           'rating', (SELECT round(avg(r.rating), 2) FROM tb_review r WHERE r.fk_product = pr.pk_product),
           'reviews', (SELECT count(*) FROM tb_review r WHERE r.fk_product = pr.pk_product)
       ) AS data
  FROM tb_product pr
  LEFT JOIN tb_category cat ON cat.pk_category = pr.fk_category
  LEFT JOIN tb_category parent ON parent.pk_category = cat.fk_parent
  LEFT JOIN tb_inventory inv ON inv.fk_product = pr.pk_product

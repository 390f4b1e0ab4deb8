-- An order line with its order, customer and product (inner joins to parents only).
-- expect: ok
SELECT i.pk_order_item,
       jsonb_build_object('order', o.pk_order, 'customer', c.name, 'country', c.country,
                          'product', pr.name, 'amount', i.quantity * i.unit_price) AS data
  FROM tb_order_item i
  JOIN tb_order o ON o.pk_order = i.fk_order
  JOIN tb_customer c ON c.pk_customer = o.fk_customer
  JOIN tb_product pr ON pr.pk_product = i.fk_product

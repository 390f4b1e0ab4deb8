-- An order with line items, each with its product, and the order total.
-- expect: ok
SELECT o.pk_order,
       o.status,
       c.name AS customer,
       (SELECT COALESCE(sum(i.quantity * i.unit_price), 0) FROM tb_order_item i WHERE i.fk_order = o.pk_order) AS total,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('sku', pr.sku, 'name', pr.name, 'quantity', i.quantity,
                                                     'unit_price', i.unit_price) ORDER BY i.pk_order_item)
                   FROM tb_order_item i JOIN tb_product pr ON pr.pk_product = i.fk_product
                  WHERE i.fk_order = o.pk_order), '[]'::jsonb) AS items
  FROM tb_order o
  JOIN tb_customer c ON c.pk_customer = o.fk_customer

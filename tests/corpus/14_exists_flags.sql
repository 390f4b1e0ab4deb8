-- Boolean flags from EXISTS and NOT EXISTS.
-- expect: ok
SELECT c.pk_customer,
       EXISTS (SELECT 1 FROM tb_order o WHERE o.fk_customer = c.pk_customer) AS has_orders,
       NOT EXISTS (SELECT 1 FROM tb_address a WHERE a.fk_customer = c.pk_customer AND a.kind = 'billing')
           AS missing_billing_address
  FROM tb_customer c

-- The latest order per customer with DISTINCT ON at the top level.
-- expect: rejected DISTINCT ON
SELECT DISTINCT ON (o.fk_customer) o.pk_order, o.fk_customer, o.placed_at
  FROM tb_order o
 ORDER BY o.fk_customer, o.placed_at DESC

-- Only customers with at least two orders (HAVING on a GROUP BY of the key).
-- expect: ok
SELECT c.pk_customer, c.name, count(o.pk_order) AS orders
  FROM tb_customer c
  JOIN tb_order o ON o.fk_customer = c.pk_customer
 GROUP BY c.pk_customer
HAVING count(o.pk_order) >= 2

-- Products joined to a price band by a range condition.
-- expect: rejected non-equi join
SELECT pr.pk_product, cheaper.name AS cheaper_product
  FROM tb_product pr
  JOIN tb_product cheaper ON cheaper.price < pr.price AND cheaper.pk_product = pr.pk_product - 1 OR cheaper.price = 0

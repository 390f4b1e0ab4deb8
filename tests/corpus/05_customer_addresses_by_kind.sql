-- A customer with billing and shipping addresses split by FILTER.
-- expect: ok
SELECT c.pk_customer,
       c.name,
       (SELECT jsonb_agg(jsonb_build_object('street', a.street, 'city', a.city) ORDER BY a.pk_address)
                FILTER (WHERE a.kind = 'billing')
          FROM tb_address a WHERE a.fk_customer = c.pk_customer) AS billing,
       (SELECT jsonb_agg(jsonb_build_object('street', a.street, 'city', a.city) ORDER BY a.pk_address)
                FILTER (WHERE a.kind = 'shipping')
          FROM tb_address a WHERE a.fk_customer = c.pk_customer) AS shipping
  FROM tb_customer c

-- A key that does not follow the pk_ convention, chosen with the key option.
-- expect: ok
-- key: order_id
SELECT o.pk_order AS order_id, o.status, (SELECT count(*) FROM tb_order_item i WHERE i.fk_order = o.pk_order) AS lines
  FROM tb_order o

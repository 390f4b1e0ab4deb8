-- A read model without any pk_ column and no key option.
-- expect: rejected key
SELECT u.email, u.name FROM tb_user u

SET 'table.exec.sate.ttl' = '1 h';

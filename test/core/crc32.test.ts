// CRC-32: the check value of the standard ("123456789" -> CBF43926), zlib's and the JS table
// agree on random data, and chaining (previous) equals one pass.
import t from 'tap';
import { crc32, crc32Table } from '../../src/core/crc32.ts';

t.test('crc32', async (t) => {
  const check = new TextEncoder().encode('123456789');
  t.equal(crc32(check), 0xcbf43926);
  t.equal(crc32Table(check), 0xcbf43926);
  t.equal(crc32(new Uint8Array(0)), 0);
  let s = 7;
  const data = new Uint8Array(100_003).map(() => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s >>> 24; });
  t.equal(crc32(data), crc32Table(data), 'zlib and the table agree');
  t.equal(crc32(data.subarray(5000), crc32(data.subarray(0, 5000))), crc32(data), 'chained');
  t.equal(crc32Table(data.subarray(5000), crc32Table(data.subarray(0, 5000))), crc32Table(data), 'chained (table)');
});

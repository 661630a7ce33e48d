//! PAX sparse files (GNU tar's formats 0.0, 0.1 and 1.0), read as Go's
//! archive/tar reads them: the entry's data holds only the listed chunks,
//! which are written at their offsets into a file of the real size (the
//! rest are holes). Pure parsing and checks here; the writing is in apply.

use std::io::Read;

/// Bounds on what an image can make this code hold: the 1.0 map's text and
/// the number of chunks.
pub const MAX_MAP_BYTES: u64 = 1 << 20;
pub const MAX_CHUNKS: usize = 100_000;

/// A sparse file: its real size and where its map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    pub real_size: u64,
    pub map: SparseMap,
    /// Bytes of data the entry holds (map text included for 1.0).
    pub data_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparseMap {
    /// Formats 0.0 and 0.1: (offset, length) chunks from the PAX records.
    Given(Vec<(u64, u64)>),
    /// Format 1.0: the map is text at the start of the data, padded to a
    /// 512-byte block.
    InData,
}

fn num(v: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "sparse {what} `{}` is not a number",
                crate::escape::bytes(v)
            )
        })
}

/// Format 0.1's `GNU.sparse.map`: `offset,length,offset,length,...`.
pub fn parse_map_01(v: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    let nums = v
        .split(|&b| b == b',')
        .map(|n| num(n, "map value"))
        .collect::<Result<Vec<_>, _>>()?;
    if nums.len() % 2 != 0 {
        return Err("sparse map has an odd number of values".into());
    }
    if nums.len() / 2 > MAX_CHUNKS {
        return Err(format!("sparse map has more than {MAX_CHUNKS} chunks"));
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Format 0.0: pairs of `GNU.sparse.offset` / `GNU.sparse.numbytes` records,
/// in order.
pub fn pair_map_00(records: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    let mut offset = None;
    for (k, v) in records {
        match k.as_slice() {
            b"GNU.sparse.offset" => {
                if offset.is_some() {
                    return Err("sparse offset without its numbytes".into());
                }
                offset = Some(num(v, "offset")?);
            }
            b"GNU.sparse.numbytes" => {
                let o = offset.take().ok_or("sparse numbytes without its offset")?;
                out.push((o, num(v, "numbytes")?));
                if out.len() > MAX_CHUNKS {
                    return Err(format!("sparse map has more than {MAX_CHUNKS} chunks"));
                }
            }
            _ => {}
        }
    }
    if offset.is_some() {
        return Err("sparse offset without its numbytes".into());
    }
    Ok(out)
}

/// Reads format 1.0's map from the start of the data: a count, then an
/// offset and a length per chunk, one decimal number per line, padded with
/// zeros to a 512-byte block. Returns the map and the bytes consumed.
pub fn read_map_10<R: Read>(r: &mut R) -> Result<(Vec<(u64, u64)>, u64), String> {
    let mut consumed = 0u64;
    let mut line = Vec::new();
    let mut next = |r: &mut R| -> Result<u64, String> {
        line.clear();
        let mut b = [0u8; 1];
        loop {
            if consumed >= MAX_MAP_BYTES {
                return Err(format!("sparse map longer than {MAX_MAP_BYTES} bytes"));
            }
            r.read_exact(&mut b)
                .map_err(|e| format!("reading the sparse map: {e}"))?;
            consumed += 1;
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        num(&line, "map line")
    };
    let count = next(r)?;
    if count > MAX_CHUNKS as u64 {
        return Err(format!("sparse map has more than {MAX_CHUNKS} chunks"));
    }
    let mut map = Vec::new();
    for _ in 0..count {
        let o = next(r)?;
        let l = next(r)?;
        map.push((o, l));
    }
    let pad = (512 - consumed % 512) % 512;
    let mut skip = vec![0u8; usize::try_from(pad).unwrap_or(0)];
    r.read_exact(&mut skip)
        .map_err(|e| format!("reading the sparse map's padding: {e}"))?;
    Ok((map, consumed + pad))
}

/// Checks chunks are in order, do not overlap, fit the real size and add up
/// to the data that follows the map.
pub fn check(map: &[(u64, u64)], real_size: u64, data: u64) -> Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(o, l) in map {
        let e = o
            .checked_add(l)
            .ok_or("sparse chunk beyond the largest file size")?;
        if o < end {
            return Err("sparse chunks overlap or are out of order".into());
        }
        if e > real_size {
            return Err(format!(
                "sparse chunk ends at {e}, past the file's real size {real_size}"
            ));
        }
        end = e;
        total += l;
    }
    if total != data {
        return Err(format!(
            "sparse chunks hold {total} bytes but the entry has {data}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(parse_map_01(b"0,5,100,5").unwrap(), vec![(0, 5), (100, 5)]);
        assert!(parse_map_01(b"0,5,100").is_err());
        assert!(parse_map_01(b"0,x").is_err());
        let recs: Vec<(Vec<u8>, Vec<u8>)> = [
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "3"),
            ("GNU.sparse.offset", "9"),
            ("GNU.sparse.numbytes", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(pair_map_00(&recs).unwrap(), vec![(0, 3), (9, 1)]);
        let mut data = b"2\n0\n3\n9\n1\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcd");
        let mut r = &data[..];
        assert_eq!(read_map_10(&mut r).unwrap(), (vec![(0, 3), (9, 1)], 512));
        assert_eq!(r, b"abcd");
    }

    #[test]
    fn bad_maps_are_refused() {
        assert!(check(&[(0, 3), (9, 1)], 10, 4).is_ok());
        assert!(check(&[(0, 3), (2, 1)], 10, 4).is_err());
        assert!(check(&[(0, 3), (9, 2)], 10, 5).is_err());
        assert!(check(&[(0, 3)], 10, 4).is_err());
        assert!(check(&[(u64::MAX, 3)], u64::MAX, 3).is_err());
        let mut r = &b"99999999999\n"[..];
        assert!(read_map_10(&mut r).is_err());
        let endless = vec![b'1'; 2 << 20];
        assert!(read_map_10(&mut &endless[..]).is_err());
    }
}

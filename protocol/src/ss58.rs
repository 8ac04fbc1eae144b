//! SS58 addresses (Substrate/Bittensor account encoding).
//!
//! Same algorithm as `sp_core`'s `to_ss58check_with_version`: base58 of
//! `prefix ‖ public key ‖ blake2b-512("SS58PRE" ‖ prefix ‖ public key)[..2]`, with a 1-byte
//! prefix below 64 and Substrate's 2-byte encoding for 64..16384.

use blake2::{Blake2b512, Digest};

/// Default SS58 prefix (generic Substrate, used by Bittensor).
pub const DEFAULT_PREFIX: u16 = 42;

/// Largest prefix the 2-byte encoding can carry.
pub const MAX_PREFIX: u16 = 0x3FFF;

/// Errors decoding an SS58 string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ss58Error {
    /// Not valid base58.
    #[error("invalid base58")]
    BadBase58,
    /// Length does not match a 32-byte account with a 1- or 2-byte prefix.
    #[error("invalid length {0}")]
    BadLength(usize),
    /// The 2-byte blake2b checksum does not match.
    #[error("invalid checksum")]
    BadChecksum,
    /// The prefix byte(s) are malformed or reserved.
    #[error("invalid prefix")]
    BadPrefix,
}

fn checksum(data: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(data);
    let out = h.finalize();
    [out[0], out[1]]
}

/// Encodes a 32-byte public key with the given network prefix.
///
/// Prefixes above [`MAX_PREFIX`] cannot be encoded and are reduced to their low 14 bits.
pub fn encode(public: &[u8; 32], prefix: u16) -> String {
    let ident = prefix & MAX_PREFIX;
    let mut data = Vec::with_capacity(36);
    if ident < 64 {
        data.push(ident as u8);
    } else {
        data.push((((ident & 0b0000_0000_1111_1100) as u8) >> 2) | 0b0100_0000);
        data.push(((ident >> 8) as u8) | (((ident & 0b11) as u8) << 6));
    }
    data.extend_from_slice(public);
    let sum = checksum(&data);
    data.extend_from_slice(&sum);
    bs58::encode(data).into_string()
}

/// Decodes an SS58 string into (public key, prefix).
pub fn decode(s: &str) -> Result<([u8; 32], u16), Ss58Error> {
    // 36 bytes of data never need more than 50 base58 digits; refuse long junk early.
    if s.len() > 64 {
        return Err(Ss58Error::BadLength(s.len()));
    }
    let data = bs58::decode(s)
        .into_vec()
        .map_err(|_| Ss58Error::BadBase58)?;
    let (prefix_len, ident) = match data.first() {
        None => return Err(Ss58Error::BadLength(0)),
        Some(&b @ 0..=63) => (1, b as u16),
        Some(&b @ 64..=127) => {
            let second = *data.get(1).ok_or(Ss58Error::BadLength(data.len()))?;
            let lower = (b << 2) | (second >> 6);
            let upper = second & 0b0011_1111;
            (2, lower as u16 | ((upper as u16) << 8))
        }
        Some(_) => return Err(Ss58Error::BadPrefix),
    };
    if data.len() != prefix_len + 32 + 2 {
        return Err(Ss58Error::BadLength(data.len()));
    }
    let body = &data[..prefix_len + 32];
    if checksum(body) != data[prefix_len + 32..] {
        return Err(Ss58Error::BadChecksum);
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&body[prefix_len..]);
    Ok((public, ident))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";

    fn alice() -> [u8; 32] {
        let mut k = [0u8; 32];
        hex::decode_to_slice(ALICE, &mut k).unwrap();
        k
    }

    #[test]
    fn alice_matches_published_addresses() {
        let k = alice();
        let generic = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
        assert_eq!(encode(&k, 42), generic);
        assert_eq!(
            encode(&k, 0),
            "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5"
        );
        assert_eq!(decode(generic), Ok((k, 42)));
    }

    #[test]
    fn two_byte_prefixes_round_trip() {
        let k = alice();
        for prefix in [64u16, 255, 1000, 1284, MAX_PREFIX] {
            assert_eq!(
                decode(&encode(&k, prefix)),
                Ok((k, prefix)),
                "prefix {prefix}"
            );
        }
    }

    #[test]
    fn corrupted_addresses_are_rejected() {
        let good = encode(&alice(), 42);
        // Change one character to another base58 digit: the checksum catches it.
        let mut bad: Vec<char> = good.chars().collect();
        bad[10] = if bad[10] == 'a' { 'b' } else { 'a' };
        let bad: String = bad.into_iter().collect();
        assert_eq!(decode(&bad), Err(Ss58Error::BadChecksum));
        assert_eq!(decode("0OIl"), Err(Ss58Error::BadBase58));
        assert_eq!(decode(""), Err(Ss58Error::BadLength(0)));
        assert!(matches!(decode(&good[..40]), Err(Ss58Error::BadLength(_))));
        // A first byte ≥ 128 is not a valid prefix.
        let mut data = vec![200u8];
        data.extend_from_slice(&[0u8; 35]);
        assert_eq!(
            decode(&bs58::encode(data).into_string()),
            Err(Ss58Error::BadPrefix)
        );
    }
}

//! Kamailio's `evapi` stream: netstrings (`<length>:<payload>,`), the module's default framing.

/// Takes whole netstrings off the front of `buffer`; leaves a partial one for the next read.
/// `Err` when the stream is not netstrings at all (the connection should be dropped).
pub fn take_netstrings(buffer: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
    let mut messages = Vec::new();
    let mut start = 0;
    loop {
        let rest = &buffer[start..];
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            if rest.len() > 10 || !rest.iter().all(u8::is_ascii_digit) {
                return Err("not a netstring length".into());
            }
            break;
        };
        let length: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or("not a netstring length")?;
        if length > 1 << 20 {
            return Err(format!("a {length}-byte message is more than any event"));
        }
        let end = colon + 1 + length;
        if rest.len() < end + 1 {
            break;
        }
        if rest[end] != b',' {
            return Err("a netstring without its ','".into());
        }
        messages.push(rest[colon + 1..end].to_vec());
        start += end + 1;
        // Kamailio's examples put a newline between messages: tolerate whitespace.
        while buffer.get(start).is_some_and(u8::is_ascii_whitespace) {
            start += 1;
        }
    }
    buffer.drain(..start);
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_messages_come_out_and_a_partial_one_waits() {
        let mut buffer = b"5:hello,\n3:abc,7:par".to_vec();
        assert_eq!(
            take_netstrings(&mut buffer).expect("netstrings"),
            [b"hello".to_vec(), b"abc".to_vec()]
        );
        assert_eq!(buffer, b"7:par");
        buffer.extend_from_slice(b"tial,");
        assert_eq!(
            take_netstrings(&mut buffer).expect("netstrings"),
            [b"partial".to_vec()]
        );
        assert!(buffer.is_empty());
        assert!(take_netstrings(&mut b"hello world".to_vec()).is_err());
        assert!(take_netstrings(&mut b"3:abcX".to_vec()).is_err());
    }
}

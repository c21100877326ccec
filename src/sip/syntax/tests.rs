use super::*;

fn sip(text: &str) -> SipUri {
    match parse_uri(text) {
        Ok(Uri::Sip(uri)) => uri,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn sip_uris_in_parts_and_back() {
    let uri = sip("sip:100@10.0.0.5:5060;transport=udp;lr");
    assert_eq!(uri.user.as_deref(), Some("100"));
    assert_eq!(uri.host, "10.0.0.5");
    assert_eq!(uri.port, Some(5060));
    assert_eq!(uri.param("lr"), Some(None));
    assert_eq!(uri.param("transport"), Some(Some("udp")));
    assert_eq!(uri.to_string(), "sip:100@10.0.0.5:5060;transport=udp;lr");
    let v6 = sip("sips:[2001:db8::1]:5061");
    assert_eq!(v6.host, "[2001:db8::1]");
    assert_eq!(v6.port, Some(5061));
}

#[test]
fn unusual_but_valid_users_are_kept_as_written() {
    // RFC 4475 intmeth, semiuri and esc01.
    let uri = sip(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
    );
    assert_eq!(
        uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(uri.host, "example.com");
    let semi = sip("sip:user;par=u%40example.net@example.com");
    assert_eq!(
        semi.user_unescaped().as_deref(),
        Some("user;par=u@example.net")
    );
    let esc = sip("sip:sips%3Auser%40example.com@example.net");
    assert_eq!(
        esc.user_unescaped().as_deref(),
        Some("sips:user@example.com")
    );
    assert_eq!(
        sip("sip:%31%30%30@x").user_unescaped().as_deref(),
        Some("100")
    );
    // An escaped control character is never decoded into the text.
    assert_eq!(
        sip("sip:%00abc%0d%41@x").user_unescaped().as_deref(),
        Some("%00abc%0dA")
    );
    assert_eq!(
        sip("sip:%31%30%30@x").user_unescaped().as_deref(),
        Some("100")
    );
}

#[test]
fn other_schemes_are_recognised_and_garbage_refused() {
    assert!(
        matches!(parse_uri("soap.beep://192.0.2.103:3002"), Ok(Uri::Other { scheme, .. }) if scheme == "soap.beep")
    );
    assert!(matches!(
        parse_uri("nobodyKnowsThisScheme:totallyopaquecontent"),
        Ok(Uri::Other { .. })
    ));
    assert!(
        matches!(parse_uri("tel:+34911239613"), Ok(Uri::Other { scheme, .. }) if scheme == "tel")
    );
    for bad in [
        "<sip:user@example.com>",
        "sip:user@example.com; lr",
        "sip:us er@x",
        "sip:user@",
        "sip:u@h:99999",
        "user@example.com",
        "sip:u%zz@x",
        "1sip:x",
    ] {
        assert!(parse_uri(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn uri_headers_are_kept_apart() {
    let uri = sip("sip:user@example.com?Route=%3Csip:example.com%3E");
    assert_eq!(uri.headers.as_deref(), Some("Route=%3Csip:example.com%3E"));
}

#[test]
fn name_addr_with_white_space_allowed_by_the_grammar() {
    // RFC 4475 wsinv.
    let to =
        parse_name_addr(" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    assert!(!to.bracketed);
    let from =
        parse_name_addr(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#)
            .unwrap();
    assert_eq!(from.display.as_deref(), Some(r#""J Rosenberg \\\"""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    let contact = parse_name_addr(r#""Quoted string \"\"" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33"#).unwrap();
    assert_eq!(contact.param("secondparam"), Some(None));
    assert_eq!(contact.param("q"), Some(Some("0.33")));
    // lwsdisp: no space between the display name and '<'.
    let lws = parse_name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
    assert_eq!(lws.display.as_deref(), Some("caller"));
}

#[test]
fn unusual_tokens_and_quoted_utf8_parameters_are_valid() {
    // RFC 4475 intmeth's From.
    let from = parse_name_addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{0440}\u{0430}\u{0431}\";tag=_token~1'+`*%!-.").unwrap();
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
}

#[test]
fn malformed_name_addrs_are_refused() {
    for (bad, why) in [
        (
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "badaspec",
        ),
        ("Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "baddn"),
        (r#""Mr. J. User <sip:j.user@example.com>"#, "quotbal"),
        (
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "regbadct",
        ),
        (r#""Joe" <sip:joe@example.org>;;;;"#, "badinv01"),
        ("<sip:x@y", "unterminated"),
    ] {
        assert!(
            parse_name_addr(bad).is_err(),
            "{why}: {bad} should be refused"
        );
    }
}

#[test]
fn via_with_folded_white_space() {
    let via = parse_via("SIP  /   2.0 /UDP     192.0.2.2;branch=390skdjuw").unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.branch(), Some("390skdjuw"));
    let via = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8")
        .unwrap();
    assert_eq!(via.host, "spindle.example.com");
    assert_eq!(via.branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(via.sent_by(), "spindle.example.com:5060");
    let via =
        parse_via("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK-1;received=10.0.0.2").unwrap();
    assert_eq!(via.param("rport"), Some(None));
    assert_eq!(via.port, Some(5070));
}

#[test]
fn malformed_vias_are_refused() {
    for bad in [
        "SIP/2.0/UDP 192.0.2.15;;",
        ";",
        "",
        "SIP/3.0/UDP host",
        "SIP/2.0 host",
        "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP ho st",
    ] {
        assert!(parse_via(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn cseq_numbers_fit_32_bits() {
    assert_eq!(
        parse_cseq("0009\t INVITE").unwrap(),
        CSeq {
            seq: 9,
            method: "INVITE".into()
        }
    );
    assert_eq!(parse_cseq("4294967295 OPTIONS").unwrap().seq, u32::MAX);
    for bad in [
        "36893488147419103232 REGISTER",
        "INVITE",
        "1",
        "1INVITE",
        "-1 INVITE",
    ] {
        assert!(parse_cseq(bad).is_err(), "{bad}");
    }
}

#[test]
fn commas_split_outside_quotes_and_brackets() {
    assert_eq!(
        split_commas(r#""a, b" <sip:x@y;p=1,2>, <sip:z@w>"#).unwrap(),
        vec![r#""a, b" <sip:x@y;p=1,2>"#, "<sip:z@w>"]
    );
    assert_eq!(
        split_commas("SIP/2.0/UDP a;branch=1 , SIP/2.0/UDP b")
            .unwrap()
            .len(),
        2
    );
    assert_eq!(split_commas(";;,;,,").unwrap(), vec![";;", ";", "", ""]);
    assert_eq!(split_commas(r#""open"#), None);
}

//! Tests of CSV loading: errors with lines and columns, newline styles,
//! delimiters, columns left out.

use super::*;

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    // One directory for every run (each test writes its own file names), so
    // runs never accumulate directories in the system's temporary directory.
    let dir = std::env::temp_dir().join("flowmote-data-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn training_errors_name_line_and_column() {
    let p = tmp("a.csv", "x,y\n1,2\n3,abc\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("line 3, column 2 \"y\""), "{e}");
    let p = tmp("b.csv", "x,y\n1,2\n3,NaN\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("line 3") && e.contains("NaN"), "{e}");
    let p = tmp("c.csv", "x,y\n1,2\n3\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("line 3") && e.contains("malformed"), "{e}");
    let p = tmp("d.csv", "1,2\n3,4\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("header"), "{e}");
    let p = tmp("e.csv", "x,y\n");
    assert!(format!("{:#}", load_training(&p, None).unwrap_err()).contains("no data rows"));
}

#[test]
fn line_numbers_are_right_for_lf_crlf_and_cr_files() {
    for (name, nl) in [("lf.csv", "\n"), ("crlf.csv", "\r\n"), ("cr.csv", "\r")] {
        let text = ["x,y", "1,2", "3,4", "", "5,6", "7,abc", ""].join(nl);
        let p = tmp(name, &text);
        let e = format!("{:#}", load_training(&p, None).unwrap_err());
        assert!(e.contains("line 6, column 2"), "{name}: {e}");
        let text = ["x,y", "1,2", "3,4", "5", ""].join(nl);
        let p = tmp(name, &text);
        let e = format!("{:#}", load_training(&p, None).unwrap_err());
        assert!(e.contains("line 4") && e.contains("malformed"), "{name}: {e}");
        let text = ["x,y", "1,2", "", "3,4", ""].join(nl);
        let p = tmp(name, &text);
        assert_eq!(load_training(&p, None).unwrap().lines, vec![2, 4], "{name}");
    }
    // A quoted field spanning lines: the next record's line counts both.
    let p = tmp("q.csv", "x,y\r\n\"1\r\n\",2\r\n3,abc\r\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("line 4, column 2"), "{e}");
}

#[test]
fn delimiters_are_detected() {
    for (name, d) in [("semi.csv", ";"), ("tab.csv", "\t"), ("comma.csv", ",")] {
        let text = format!("x{d}y\n1{d}2\n3{d}4.5\n");
        let ds = load_training(&tmp(name, &text), None).unwrap();
        assert_eq!(ds.features, ["x", "y"], "{name}");
        assert_eq!(ds.rows, vec![vec![1.0, 2.0], vec![3.0, 4.5]], "{name}");
    }
    // A quoted comma in a `;` file is not a delimiter.
    assert_eq!(detect_delimiter(b"\"a,b\";c;d\n"), b';');
    assert_eq!(detect_delimiter(b"single\n1\n"), b',');
}

#[test]
fn time_constant_and_text_columns_are_left_out() {
    let mut text = String::from("time_ms,stamp,x,flat,y\n");
    for i in 0..30 {
        text.push_str(&format!(
            "{},2026-11-29T10:{:02}:00,{},7,{}\n",
            1000 + 20 * i,
            i,
            (i * 7) % 5,
            (i * 3) % 4
        ));
    }
    let p = tmp("time.csv", &text);
    let ds = load_training(&p, None).unwrap();
    assert_eq!(ds.features, ["x", "y"]);
    let names: Vec<&str> = ds.dropped.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["time_ms", "stamp", "flat"]);
    assert!(ds.dropped[0].reason.contains("increases"));
    assert!(ds.dropped[1].reason.contains("not numeric"));
    assert!(ds.dropped[2].reason.contains("constant (7)"));
    // --columns keeps exactly what it names; --exclude removes.
    let only = Columns {
        only: Some(vec!["time_ms".into(), "y".into()]),
        exclude: vec![],
    };
    let ds = load_training_columns(&p, None, &only).unwrap();
    assert_eq!(ds.features, ["time_ms", "y"]);
    assert!(ds.dropped.is_empty());
    let ex = Columns {
        only: None,
        exclude: vec!["y".into()],
    };
    assert_eq!(load_training_columns(&p, None, &ex).unwrap().features, ["x"]);
    let bad = Columns {
        only: Some(vec!["nope".into()]),
        exclude: vec![],
    };
    let e = format!("{:#}", load_training_columns(&p, None, &bad).unwrap_err());
    assert!(e.contains("--columns names \"nope\""), "{e}");
    // A column with one bad cell among numbers is an error with its line, not left out.
    let p = tmp("onebad.csv", "x,y\n1,2\n3,abc\n5,6\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("line 3, column 2"), "{e}");
    // Nothing left: the message says what was left out.
    let p = tmp("allflat.csv", "x,y\n1,2\n1,2\n");
    let e = format!("{:#}", load_training(&p, None).unwrap_err());
    assert!(e.contains("left out") && e.contains("constant"), "{e}");
}

#[test]
fn labels_and_steps() {
    let p = tmp("f.csv", "x,label,y\n1,0,0.5\n3,1,0.25\n5,0,1\n");
    let d = load_training(&p, Some("label")).unwrap();
    assert_eq!(d.features, ["x", "y"]);
    assert_eq!(d.labels.as_deref(), Some(&[false, true, false][..]));
    assert_eq!(d.quantisation_steps(), vec![Some(2.0), None]);
}

#[test]
fn scoring_keeps_bad_rows() {
    let p = tmp("g.csv", "y,x,z\n1,2,9\nnan,3,9\n");
    let d = load_for_model(&p, &["x".into(), "y".into()], None).unwrap();
    assert_eq!(d.rows[0], vec![2.0, 1.0]);
    assert!(d.row_errors[1].as_deref().unwrap().contains("NaN"));
    let e = load_for_model(&p, &["a".into(), "b".into()], None).unwrap_err();
    assert!(format!("{e:#}").contains("2 features"));
}

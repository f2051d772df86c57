def write_report(results, md, png):
    print("report: TODO")

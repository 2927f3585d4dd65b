import argparse
print("training")
